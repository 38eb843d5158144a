//! Safe state machines: one head ([`Sketch`]) and one layer of heads ([`Bank`]).

mod bank;
mod exact;
mod head;
pub mod hybrid;
pub mod paged;
pub mod state;

pub use bank::{Bank, BANK_FORMAT_VERSION, BANK_MAGIC};
pub use exact::Hybrid;
pub use head::serialize;
pub use head::{Sketch, NORM_REL, OUT_LIMIT, STATE_LIMIT};
