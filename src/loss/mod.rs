//! MultiMat's contrastive losses with per-pair presence masks: CLIP, AllPairsCLIP,
//! AnchoredCLIP, streamed TensorCLIP and 3-D BarlowTwins.
