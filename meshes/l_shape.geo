// L-shaped domain [0,1]^2 minus [0.5,1]^2 (femeso reference geometry).
// Boundary tag: 1 (whole boundary).  Domain tag: 1.
SetFactory("OpenCASCADE");
h = DefineNumber[0.05, Name "Parameters/mesh size"];
Rectangle(1) = {0, 0, 0, 1, 1};
Rectangle(2) = {0.5, 0.5, 0, 0.5, 0.5};
BooleanDifference(10) = { Surface{1}; Delete; }{ Surface{2}; Delete; };
Physical Surface(1) = {10};
Physical Curve(1) = Boundary{ Surface{10}; };
MeshSize{ PointsOf{ Surface{10}; } } = h;
Mesh.CharacteristicLengthMax = h;
