//! Every side effect Plinth's workflows need, implemented against the contracts in
//! `plinth_workflows::contracts`.

mod worker_info;

pub use worker_info::WorkerActivities;
