//! Readers for the files materials scientists have: structures (CIF, POSCAR, pymatgen JSON,
//! Materials Project documents), DOS (vasprun.xml, DOSCAR, pymatgen JSON), charge densities
//! (CHGCAR/AECCAR), texts, precomputed embeddings (npy) and labels (CSV, pandas "split" JSON).
//! Every reader accepts plain or gzipped input and names the file and line/record in its errors.
