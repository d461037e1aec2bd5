//! Log shipping (in progress).
