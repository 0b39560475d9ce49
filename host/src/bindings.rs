//! The one set of host bindings for `wit/plugin.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    exports: { default: async },
});

pub use self::toolhost::plugin::types::{
    CallContext, Delivery, DuplicatePolicy, DuplicateScope, LogLevel, ToolError, ToolSpec,
};

impl DuplicatePolicy {
    /// The policy of a name [`as_str`](Self::as_str) gives.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        [
            Self::Allow,
            Self::Reject,
            Self::Replace,
            Self::Confirm,
            Self::Queue,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }

    /// The name used in manifests and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicatePolicy::Allow => "allow",
            DuplicatePolicy::Reject => "reject",
            DuplicatePolicy::Replace => "replace",
            DuplicatePolicy::Confirm => "confirm",
            DuplicatePolicy::Queue => "queue",
        }
    }
}

impl DuplicateScope {
    /// The scope of a name [`as_str`](Self::as_str) gives.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        [Self::Name, Self::NameAndArguments]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateScope::Name => "name",
            DuplicateScope::NameAndArguments => "name-and-arguments",
        }
    }
}

impl Delivery {
    /// The delivery of a name [`as_str`](Self::as_str) gives.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        [Self::Conversational, Self::FireAndForget]
            .into_iter()
            .find(|d| d.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Conversational => "conversational",
            Delivery::FireAndForget => "fire-and-forget",
        }
    }
}

macro_rules! serialize_as_str {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    )*};
}

serialize_as_str!(DuplicatePolicy, DuplicateScope, Delivery);
