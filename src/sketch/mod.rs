//! Safe state machines: one head ([`Sketch`]) and one layer of heads ([`Bank`]).

mod bank;
mod head;
pub mod hybrid;
pub mod state;

pub use bank::Bank;
pub use head::{Sketch, NORM_REL, OUT_LIMIT, STATE_LIMIT};
pub use hybrid::Hybrid;
