//! Training infrastructure shared by `pretrain` and `finetune`: checkpoints, the data order,
//! preemption handling, and the step loop.

pub mod checkpoint;
pub mod data_order;
pub mod preempt;
pub mod dataset;
