//! Training infrastructure shared by `pretrain` and `finetune`: checkpoints, configuration, the
//! data order, the dataset, preemption handling, the model container and the step loop.

pub mod checkpoint;
pub mod config;
pub mod data_order;
pub mod dataset;
pub mod inference;
pub mod model;
pub mod preempt;
pub mod pretrain;
pub mod step_timing;
