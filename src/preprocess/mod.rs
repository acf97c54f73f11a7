//! Preprocessing as the paper's reference code does it: DOS relative to E_F resampled to a
//! fixed length, charge densities resampled periodically to 32³ with the electron count preserved.
