//! What the `toolhost` command shows a person.

mod call;
mod serve;

pub use self::call::call;
pub use self::serve::serve;
