//! What the `toolhost` command shows a person.

mod call;
mod new;
mod serve;

pub use self::call::call;
pub use self::new::{Language, new_plugin};
pub use self::serve::{SessionFlags, serve};
