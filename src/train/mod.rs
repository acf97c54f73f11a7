//! Training infrastructure shared by `pretrain` and `finetune`: checkpoints, configs, the data
//! order, and the step loop.

pub mod checkpoint;
