//! Element property tables (Z = 1 … 103) from which `features` computes the 92-d CGCNN-style
//! atom features. Facts, typed from these sources (values, not code, were taken):
//!
//! * Electronegativity: Pauling scale, as tabulated in the CRC Handbook of Chemistry and Physics
//!   (and its Wikipedia data page "Electronegativities of the elements"); `None` where undefined
//!   (He, Ne, Ar, Lr).
//! * Covalent radius (pm): B. Cordero et al., "Covalent radii revisited", Dalton Trans. 2008,
//!   2832–2838 (sp³ carbon; high-spin Mn, Fe, Co); `None` beyond Cm.
//! * First ionisation energy (eV): NIST Atomic Spectra Database, ground-state ionisation energies.
//! * Electron affinity (eV): Wikipedia "Electron affinity (data page)" (mostly from Hotop &
//!   Lineberger / Andersen et al.); `None` where the anion is unbound or the value unknown.
//! * Molar (atomic) volume (cm³/mol): WebElements "molar volume" (solid-state values);
//!   `None` where not tabulated.
//!
//! Group, period, block and valence-electron counts are derived from Z in `features`.
//! Laid out (nine values a line, symbols in the trailing comment) by a one-off script from the
//! typed tables; `features` tests spot-check well-known values.

/// Number of elements with property data (H … Lr).
pub const NUM_ELEMENTS: usize = 103;

/// Pauling electronegativity, indexed by Z − 1.
pub const ELECTRONEGATIVITY: [Option<f64>; NUM_ELEMENTS] = [
    Some(2.20), None, Some(0.98), Some(1.57), Some(2.04), Some(2.55), Some(3.04), Some(3.44), Some(3.98),  // H He Li Be B C N O F
    None, Some(0.93), Some(1.31), Some(1.61), Some(1.90), Some(2.19), Some(2.58), Some(3.16), None,  // Ne Na Mg Al Si P S Cl Ar
    Some(0.82), Some(1.00), Some(1.36), Some(1.54), Some(1.63), Some(1.66), Some(1.55), Some(1.83), Some(1.88),  // K Ca Sc Ti V Cr Mn Fe Co
    Some(1.91), Some(1.90), Some(1.65), Some(1.81), Some(2.01), Some(2.18), Some(2.55), Some(2.96), Some(3.00),  // Ni Cu Zn Ga Ge As Se Br Kr
    Some(0.82), Some(0.95), Some(1.22), Some(1.33), Some(1.60), Some(2.16), Some(1.90), Some(2.20), Some(2.28),  // Rb Sr Y Zr Nb Mo Tc Ru Rh
    Some(2.20), Some(1.93), Some(1.69), Some(1.78), Some(1.96), Some(2.05), Some(2.10), Some(2.66), Some(2.60),  // Pd Ag Cd In Sn Sb Te I Xe
    Some(0.79), Some(0.89), Some(1.10), Some(1.12), Some(1.13), Some(1.14), Some(1.13), Some(1.17), Some(1.20),  // Cs Ba La Ce Pr Nd Pm Sm Eu
    Some(1.20), Some(1.10), Some(1.22), Some(1.23), Some(1.24), Some(1.25), Some(1.10), Some(1.27), Some(1.30),  // Gd Tb Dy Ho Er Tm Yb Lu Hf
    Some(1.50), Some(2.36), Some(1.90), Some(2.20), Some(2.20), Some(2.28), Some(2.54), Some(2.00), Some(1.62),  // Ta W Re Os Ir Pt Au Hg Tl
    Some(2.33), Some(2.02), Some(2.00), Some(2.20), Some(2.20), Some(0.70), Some(0.90), Some(1.10), Some(1.30),  // Pb Bi Po At Rn Fr Ra Ac Th
    Some(1.50), Some(1.38), Some(1.36), Some(1.28), Some(1.30), Some(1.30), Some(1.30), Some(1.30), Some(1.30),  // Pa U Np Pu Am Cm Bk Cf Es
    Some(1.30), Some(1.30), Some(1.30), None,  // Fm Md No Lr
];

/// Covalent radius in pm (Cordero 2008), indexed by Z − 1.
pub const COVALENT_RADIUS_PM: [Option<f64>; NUM_ELEMENTS] = [
    Some(31.0), Some(28.0), Some(128.0), Some(96.0), Some(84.0), Some(76.0), Some(71.0), Some(66.0), Some(57.0),  // H He Li Be B C N O F
    Some(58.0), Some(166.0), Some(141.0), Some(121.0), Some(111.0), Some(107.0), Some(105.0), Some(102.0), Some(106.0),  // Ne Na Mg Al Si P S Cl Ar
    Some(203.0), Some(176.0), Some(170.0), Some(160.0), Some(153.0), Some(139.0), Some(161.0), Some(152.0), Some(150.0),  // K Ca Sc Ti V Cr Mn Fe Co
    Some(124.0), Some(132.0), Some(122.0), Some(122.0), Some(120.0), Some(119.0), Some(120.0), Some(120.0), Some(116.0),  // Ni Cu Zn Ga Ge As Se Br Kr
    Some(220.0), Some(195.0), Some(190.0), Some(175.0), Some(164.0), Some(154.0), Some(147.0), Some(146.0), Some(142.0),  // Rb Sr Y Zr Nb Mo Tc Ru Rh
    Some(139.0), Some(145.0), Some(144.0), Some(142.0), Some(139.0), Some(139.0), Some(138.0), Some(139.0), Some(140.0),  // Pd Ag Cd In Sn Sb Te I Xe
    Some(244.0), Some(215.0), Some(207.0), Some(204.0), Some(203.0), Some(201.0), Some(199.0), Some(198.0), Some(198.0),  // Cs Ba La Ce Pr Nd Pm Sm Eu
    Some(196.0), Some(194.0), Some(192.0), Some(192.0), Some(189.0), Some(190.0), Some(187.0), Some(187.0), Some(175.0),  // Gd Tb Dy Ho Er Tm Yb Lu Hf
    Some(170.0), Some(162.0), Some(151.0), Some(144.0), Some(141.0), Some(136.0), Some(136.0), Some(132.0), Some(145.0),  // Ta W Re Os Ir Pt Au Hg Tl
    Some(146.0), Some(148.0), Some(140.0), Some(150.0), Some(150.0), Some(260.0), Some(221.0), Some(215.0), Some(206.0),  // Pb Bi Po At Rn Fr Ra Ac Th
    Some(200.0), Some(196.0), Some(190.0), Some(187.0), Some(180.0), Some(169.0), None, None, None,  // Pa U Np Pu Am Cm Bk Cf Es
    None, None, None, None,  // Fm Md No Lr
];

/// First ionisation energy in eV (NIST ASD), indexed by Z − 1.
pub const FIRST_IONIZATION_EV: [Option<f64>; NUM_ELEMENTS] = [
    Some(13.598), Some(24.587), Some(5.392), Some(9.323), Some(8.298), Some(11.260), Some(14.534), Some(13.618), Some(17.423),  // H He Li Be B C N O F
    Some(21.565), Some(5.139), Some(7.646), Some(5.986), Some(8.152), Some(10.487), Some(10.360), Some(12.968), Some(15.760),  // Ne Na Mg Al Si P S Cl Ar
    Some(4.341), Some(6.113), Some(6.561), Some(6.828), Some(6.746), Some(6.767), Some(7.434), Some(7.902), Some(7.881),  // K Ca Sc Ti V Cr Mn Fe Co
    Some(7.640), Some(7.726), Some(9.394), Some(5.999), Some(7.900), Some(9.789), Some(9.752), Some(11.814), Some(14.000),  // Ni Cu Zn Ga Ge As Se Br Kr
    Some(4.177), Some(5.695), Some(6.217), Some(6.634), Some(6.759), Some(7.092), Some(7.280), Some(7.361), Some(7.459),  // Rb Sr Y Zr Nb Mo Tc Ru Rh
    Some(8.337), Some(7.576), Some(8.994), Some(5.786), Some(7.344), Some(8.608), Some(9.010), Some(10.451), Some(12.130),  // Pd Ag Cd In Sn Sb Te I Xe
    Some(3.894), Some(5.212), Some(5.577), Some(5.539), Some(5.473), Some(5.525), Some(5.582), Some(5.644), Some(5.670),  // Cs Ba La Ce Pr Nd Pm Sm Eu
    Some(6.150), Some(5.864), Some(5.939), Some(6.022), Some(6.108), Some(6.184), Some(6.254), Some(5.426), Some(6.825),  // Gd Tb Dy Ho Er Tm Yb Lu Hf
    Some(7.550), Some(7.864), Some(7.834), Some(8.438), Some(8.967), Some(8.959), Some(9.226), Some(10.438), Some(6.108),  // Ta W Re Os Ir Pt Au Hg Tl
    Some(7.417), Some(7.286), Some(8.414), Some(9.318), Some(10.749), Some(4.073), Some(5.278), Some(5.380), Some(6.307),  // Pb Bi Po At Rn Fr Ra Ac Th
    Some(5.890), Some(6.194), Some(6.266), Some(6.026), Some(5.974), Some(5.991), Some(6.198), Some(6.282), Some(6.368),  // Pa U Np Pu Am Cm Bk Cf Es
    Some(6.500), Some(6.580), Some(6.626), Some(4.960),  // Fm Md No Lr
];

/// Electron affinity in eV, indexed by Z − 1.
pub const ELECTRON_AFFINITY_EV: [Option<f64>; NUM_ELEMENTS] = [
    Some(0.754), None, Some(0.618), None, Some(0.280), Some(1.262), Some(-0.070), Some(1.461), Some(3.401),  // H He Li Be B C N O F
    None, Some(0.548), None, Some(0.433), Some(1.390), Some(0.746), Some(2.077), Some(3.613), None,  // Ne Na Mg Al Si P S Cl Ar
    Some(0.501), Some(0.025), Some(0.188), Some(0.079), Some(0.525), Some(0.666), None, Some(0.151), Some(0.662),  // K Ca Sc Ti V Cr Mn Fe Co
    Some(1.156), Some(1.235), None, Some(0.430), Some(1.233), Some(0.804), Some(2.021), Some(3.364), None,  // Ni Cu Zn Ga Ge As Se Br Kr
    Some(0.486), Some(0.048), Some(0.307), Some(0.426), Some(0.893), Some(0.748), Some(0.550), Some(1.050), Some(1.137),  // Rb Sr Y Zr Nb Mo Tc Ru Rh
    Some(0.562), Some(1.302), None, Some(0.300), Some(1.112), Some(1.046), Some(1.971), Some(3.059), None,  // Pd Ag Cd In Sn Sb Te I Xe
    Some(0.472), Some(0.145), Some(0.470), Some(0.570), Some(0.962), None, None, None, Some(0.116),  // Cs Ba La Ce Pr Nd Pm Sm Eu
    None, None, None, None, None, Some(1.029), None, Some(0.340), Some(0.178),  // Gd Tb Dy Ho Er Tm Yb Lu Hf
    Some(0.322), Some(0.816), Some(0.150), Some(1.100), Some(1.564), Some(2.125), Some(2.309), None, Some(0.320),  // Ta W Re Os Ir Pt Au Hg Tl
    Some(0.364), Some(0.942), Some(1.900), Some(2.416), None, Some(0.486), Some(0.100), Some(0.350), Some(0.600),  // Pb Bi Po At Rn Fr Ra Ac Th
    None, Some(0.315), None, None, None, None, None, None, None,  // Pa U Np Pu Am Cm Bk Cf Es
    None, None, None, None,  // Fm Md No Lr
];

/// Molar volume of the solid in cm³/mol (WebElements), indexed by Z − 1.
pub const MOLAR_VOLUME_CM3: [Option<f64>; NUM_ELEMENTS] = [
    Some(11.42), Some(21.00), Some(13.02), Some(4.85), Some(4.39), Some(5.29), Some(13.54), Some(14.00), Some(11.20),  // H He Li Be B C N O F
    Some(13.23), Some(23.78), Some(14.00), Some(10.00), Some(12.06), Some(17.02), Some(15.53), Some(17.39), Some(22.56),  // Ne Na Mg Al Si P S Cl Ar
    Some(45.94), Some(26.20), Some(15.00), Some(10.64), Some(8.32), Some(7.23), Some(7.35), Some(7.09), Some(6.67),  // K Ca Sc Ti V Cr Mn Fe Co
    Some(6.59), Some(7.11), Some(9.16), Some(11.80), Some(13.63), Some(12.95), Some(16.42), Some(19.78), Some(27.99),  // Ni Cu Zn Ga Ge As Se Br Kr
    Some(55.76), Some(33.94), Some(19.88), Some(14.02), Some(10.83), Some(9.38), Some(8.63), Some(8.17), Some(8.28),  // Rb Sr Y Zr Nb Mo Tc Ru Rh
    Some(8.56), Some(10.27), Some(13.00), Some(15.76), Some(16.29), Some(18.19), Some(20.46), Some(25.72), Some(35.92),  // Pd Ag Cd In Sn Sb Te I Xe
    Some(70.94), Some(38.16), Some(22.39), Some(20.69), Some(20.80), Some(20.59), Some(20.23), Some(19.98), Some(28.97),  // Cs Ba La Ce Pr Nd Pm Sm Eu
    Some(19.90), Some(19.30), Some(19.01), Some(18.74), Some(18.46), Some(19.10), Some(24.84), Some(17.78), Some(13.44),  // Gd Tb Dy Ho Er Tm Yb Lu Hf
    Some(10.85), Some(9.47), Some(8.86), Some(8.42), Some(8.52), Some(9.09), Some(10.21), Some(14.09), Some(17.22),  // Ta W Re Os Ir Pt Au Hg Tl
    Some(18.26), Some(21.31), Some(22.97), None, Some(50.50), None, Some(41.09), Some(22.55), Some(19.80),  // Pb Bi Po At Rn Fr Ra Ac Th
    Some(15.18), Some(12.49), Some(11.59), Some(12.29), Some(17.63), Some(18.05), Some(16.84), Some(16.50), None,  // Pa U Np Pu Am Cm Bk Cf Es
    None, None, None, None,  // Fm Md No Lr
];
