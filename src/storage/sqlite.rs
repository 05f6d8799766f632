//! TODO(storage helper): SqliteStore.
