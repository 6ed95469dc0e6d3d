//! `ClientError`'s message and source chain, the same with and without the
//! `tonic` feature (Cargo features are additive).

use ctx_core::{Cause, Error};
use ctx_http::ClientError;
use std::error::Error as _;
use std::fmt;

/// The messages of an error and of its sources, in order.
fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut messages = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        messages.push(err.to_string());
        next = err.source();
    }
    messages
}

/// Rust's error convention, as for `Service`: an error either includes its
/// source's message or returns it as its source, never both, or an error
/// report prints it twice.
#[test]
fn a_context_error_does_not_repeat_its_source() {
    let err: ClientError<std::io::Error> = ClientError::NotSent {
        err: Error::Canceled,
        cause: Cause::msg("user pressed stop"),
    };
    assert_eq!(
        chain(&err),
        ["request not sent: context canceled", "user pressed stop"]
    );

    // A context that ended without a cause of its own has its error as
    // cause: the message says it already, so there is no source.
    let err: ClientError<std::io::Error> = ClientError::Abandoned {
        err: Error::DeadlineExceeded,
        cause: Cause::new(Error::DeadlineExceeded),
    };
    assert_eq!(
        chain(&err),
        ["request abandoned: context deadline exceeded"]
    );

    // A cause that is the other context error is a cause of its own.
    let err: ClientError<std::io::Error> = ClientError::NotSent {
        err: Error::Canceled,
        cause: Cause::new(Error::DeadlineExceeded),
    };
    assert_eq!(
        chain(&err),
        [
            "request not sent: context canceled",
            "context deadline exceeded"
        ]
    );

    for err in [
        ClientError::<std::io::Error>::NotSent {
            err: Error::Canceled,
            cause: Cause::msg("user pressed stop"),
        },
        ClientError::Abandoned {
            err: Error::DeadlineExceeded,
            cause: Cause::msg("budget spent"),
        },
        ClientError::Service(std::io::Error::other("connection reset by peer")),
    ] {
        let own = err.to_string();
        let source = err.source().expect("a source").to_string();
        assert!(
            !own.contains(&source),
            "{own:?} repeats its source's message {source:?}"
        );
    }
}

#[derive(Debug)]
struct Why;
impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("why")
    }
}
impl std::error::Error for Why {}

/// Code that looks for the cause along the chain finds it, whichever crate in
/// the build enables which feature.
#[test]
fn the_cause_is_on_the_source_chain_whatever_the_features() {
    for err in [
        ClientError::<std::io::Error>::Abandoned {
            err: Error::Canceled,
            cause: Cause::new(Why),
        },
        ClientError::NotSent {
            err: Error::DeadlineExceeded,
            cause: Cause::new(Why),
        },
    ] {
        let mut source = err.source();
        let mut found = false;
        while let Some(s) = source {
            found |= s.downcast_ref::<Why>().is_some();
            source = s.source();
        }
        assert!(found, "the cause is not on the source chain of {err:?}");
    }
}

/// The service's error is the source of `Service`, as it is.
#[test]
fn the_service_error_is_the_source_of_service() {
    let err = ClientError::Service(std::io::Error::other("connection reset by peer"));
    assert_eq!(
        chain(&err),
        [
            "request failed in the inner service",
            "connection reset by peer"
        ]
    );
    let source = err.source().unwrap();
    assert!(source.downcast_ref::<std::io::Error>().is_some());
}
