//! What the `toolhost` command shows a person.

mod call;
mod dashboard;
mod new;
mod serve;
mod tasks;

pub use self::call::call;
pub use self::dashboard::dashboard;
pub use self::new::{Language, new_plugin};
pub use self::serve::{SessionFlags, serve};
pub use self::tasks::{TasksCommand, TasksFilter, open_store, tasks};
