//! Layers: each owns its `Param`s and the activations its backward needs, runs the ops in
//! `engine::ops`, and implements `Module` so optimisers and checkpoints see its parameters under
//! hierarchical names in a fixed order. Backward accumulates parameter gradients (`+=`) and
//! returns (writes) the input gradient.

pub mod conv3d;
pub mod resnext;
