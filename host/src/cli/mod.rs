//! What the `toolhost` command shows a person.

mod call;

pub use self::call::call;
