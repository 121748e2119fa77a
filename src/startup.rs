//! TODO (lead): application builder. Placeholder so that `pub use startup::Application`
//! in lib.rs compiles on helper branches; replace wholesale when merging.

pub struct Application;
