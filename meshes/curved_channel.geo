// A domain with curved boundaries: an ellipse with an off-centre elliptical inclusion removed.
// Boundary tags: 1 = outer ellipse, 2 = inner ellipse.  Domain tag: 1.
SetFactory("OpenCASCADE");
h = DefineNumber[0.06, Name "Parameters/mesh size"];
Disk(1) = {0, 0, 0, 1.0, 0.6};
Disk(2) = {0.3, 0.1, 0, 0.25, 0.15};
BooleanDifference(10) = { Surface{1}; Delete; }{ Surface{2}; Delete; };
b() = Boundary{ Surface{10}; };
Physical Surface(1) = {10};
Physical Curve(1) = {b(0)};
Physical Curve(2) = {b(1)};
MeshSize{ PointsOf{ Surface{10}; } } = h;
Mesh.CharacteristicLengthMax = h;
