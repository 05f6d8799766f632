//! TODO(storage helper): Writer.
