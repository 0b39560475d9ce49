//! What happens to a new call while calls of the same tool run (B10–B15): a
//! pure decision from the tool's duplicate policy and the running
//! duplicates. The session applies it under its lock, so the check and the
//! start of the call are one step (B16).

use crate::bindings::DuplicatePolicy;

/// A running (or queued) call that counts as a duplicate of the new one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Duplicate<'a> {
    pub(crate) call_id: &'a str,
    pub(crate) cancellable: bool,
}

/// The decision for a new call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Start now (B10, no duplicate, or a confirmed one under B12).
    Start,
    /// Not started; answer with the reject notice (B11).
    Reject,
    /// Not started; answer with the confirm notice (B12).
    Confirm,
    /// Cancel the duplicates, then start once they have ended (B13).
    Replace,
    /// Start once the duplicates have ended (B14).
    Queue,
    /// `replace` with a duplicate that is not cancellable: nothing is
    /// cancelled, and the new call answers with an error (B13).
    CannotReplace { call_id: String },
}

/// Decide what happens to a new call of a tool with `policy`, given the
/// duplicates running now and whether the call set `confirm_duplicate`.
pub(crate) fn admit(
    policy: DuplicatePolicy,
    confirmed: bool,
    duplicates: &[Duplicate<'_>],
) -> Admission {
    if duplicates.is_empty() {
        return Admission::Start;
    }
    match policy {
        DuplicatePolicy::Allow => Admission::Start,
        DuplicatePolicy::Reject => Admission::Reject,
        DuplicatePolicy::Confirm if confirmed => Admission::Start,
        DuplicatePolicy::Confirm => Admission::Confirm,
        DuplicatePolicy::Replace => match duplicates.iter().find(|d| !d.cancellable) {
            Some(d) => Admission::CannotReplace {
                call_id: d.call_id.to_owned(),
            },
            None => Admission::Replace,
        },
        DuplicatePolicy::Queue => Admission::Queue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DuplicatePolicy::*;

    const ONE: &[Duplicate<'static>] = &[Duplicate {
        call_id: "c1",
        cancellable: true,
    }];

    #[test]
    fn without_duplicates_every_policy_starts() {
        for p in [Allow, Reject, Replace, Confirm, Queue] {
            assert_eq!(admit(p, false, &[]), Admission::Start, "{p:?}");
        }
    }

    #[test]
    fn b10_allow_starts_beside_duplicates() {
        assert_eq!(admit(Allow, false, ONE), Admission::Start);
    }

    #[test]
    fn b11_reject_refuses_a_duplicate() {
        assert_eq!(admit(Reject, false, ONE), Admission::Reject);
        assert_eq!(admit(Reject, true, ONE), Admission::Reject);
    }

    #[test]
    fn b12_confirm_starts_only_when_confirmed() {
        assert_eq!(admit(Confirm, false, ONE), Admission::Confirm);
        assert_eq!(admit(Confirm, true, ONE), Admission::Start);
    }

    #[test]
    fn b13_replace_needs_every_duplicate_cancellable() {
        assert_eq!(admit(Replace, false, ONE), Admission::Replace);
        let mixed = [
            ONE[0],
            Duplicate {
                call_id: "c2",
                cancellable: false,
            },
        ];
        assert_eq!(
            admit(Replace, false, &mixed),
            Admission::CannotReplace {
                call_id: "c2".into()
            }
        );
    }

    #[test]
    fn b14_queue_waits_for_duplicates() {
        assert_eq!(admit(Queue, false, ONE), Admission::Queue);
    }
}
