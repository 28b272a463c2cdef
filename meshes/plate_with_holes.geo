// A 2 x 1 plate with three circular holes of different radii (femeso reference geometry).
// Boundary tags: 1 = outer boundary, 2 = hole boundaries.  Domain tag: 1.
// Regenerate with:  femeso mesh meshes/plate_with_holes.geo --size 0.08
SetFactory("OpenCASCADE");
h = DefineNumber[0.08, Name "Parameters/mesh size"];
Rectangle(1) = {0, 0, 0, 2, 1};
Disk(2) = {0.45, 0.5, 0, 0.2, 0.2};
Disk(3) = {1.15, 0.35, 0, 0.15, 0.15};
Disk(4) = {1.6, 0.65, 0, 0.12, 0.12};
BooleanDifference(10) = { Surface{1}; Delete; }{ Surface{2, 3, 4}; Delete; };
outer() = Boundary{ Surface{10}; };
Physical Surface(1) = {10};
Physical Curve(1) = {outer(0), outer(1), outer(2), outer(3)};
Physical Curve(2) = {outer(4), outer(5), outer(6)};
MeshSize{ PointsOf{ Surface{10}; } } = h;
Mesh.CharacteristicLengthMax = h;
