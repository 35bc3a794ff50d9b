//! The small helpers every strata crate uses to build and render its errors: an error with its
//! causes on one line ([`error_chain`]), and the `IoContext` extension trait that names what
//! was being done when an I/O operation failed ([`io_context!`](crate::io_context)).
//!
//! They live here because every crate already depends on `oci`; nothing here does I/O.

/// An error and its causes on one line, `: `-separated, leaving out a cause whose text the
/// line already holds (an error that prints its source itself).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

/// Defines, in the calling crate, `pub(crate) trait IoContext<T>` with
/// `fn ctx(self, context: impl FnOnce() -> String) -> Result<T, $error>` for
/// `std::io::Result<T>`, which turns an I/O error into `$error::Io { context, source }`:
/// `std::fs::read(&p).ctx(|| format!("reading {}", p.display()))?`.
#[macro_export]
macro_rules! io_context {
    ($error:ident) => {
        /// Names what was being done when an I/O operation failed.
        pub(crate) trait IoContext<T> {
            fn ctx(self, context: impl FnOnce() -> String) -> std::result::Result<T, $error>;
        }

        impl<T> IoContext<T> for std::io::Result<T> {
            fn ctx(self, context: impl FnOnce() -> String) -> std::result::Result<T, $error> {
                self.map_err(|source| $error::Io {
                    context: context(),
                    source,
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layered(&'static str, Option<Box<Layered>>);

    impl std::fmt::Display for Layered {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layered {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chains_join_causes_once() {
        let inner = Layered("disk full", None);
        let mid = Layered("writing x: disk full", Some(Box::new(inner)));
        let top = Layered("storing a layer", Some(Box::new(mid)));
        assert_eq!(error_chain(&top), "storing a layer: writing x: disk full");
    }
}
