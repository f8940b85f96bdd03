//! The boxed error the control plane's start-up and `leveectl`'s commands
//! return at their edge (the binaries print it and exit non-zero).

use std::error::Error;

/// Boxed error used at the binaries' edge.
pub type BoxError = Box<dyn Error + Send + Sync>;
