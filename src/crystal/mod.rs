//! Crystal graphs: lattice reduction, periodic neighbour search (PotNet and CGCNN graphs),
//! PotNet's infinite lattice sums (Coulomb, London, Pauli) and CGCNN-style atom features.
