// A cylinder (radius 0.5, height 1) with three spherical inclusions of different radii removed
// (femeso reference geometry in 3-D: a porous-medium-like domain with curved inner walls).
// Boundary tags: 1 = outer boundary (side, bottom, top), 2 = inclusion boundaries. Domain tag: 1.
// Regenerate with:  femeso mesh meshes/cylinder_with_inclusions.geo --size 0.032
SetFactory("OpenCASCADE");
h = DefineNumber[0.032, Name "Parameters/mesh size"];
Cylinder(1) = {0, 0, 0, 0, 0, 1, 0.5};
Sphere(2) = {0.18, 0.1, 0.3, 0.16};
Sphere(3) = {-0.2, -0.12, 0.62, 0.14};
Sphere(4) = {0.12, -0.2, 0.82, 0.1};
BooleanDifference(10) = { Volume{1}; Delete; }{ Volume{2, 3, 4}; Delete; };
walls() = Boundary{ Volume{10}; };
Physical Volume(1) = {10};
Physical Surface(1) = {walls(0), walls(1), walls(2)};
Physical Surface(2) = {walls(3), walls(4), walls(5)};
MeshSize{ PointsOf{ Volume{10}; } } = h;
Mesh.CharacteristicLengthMax = h;
