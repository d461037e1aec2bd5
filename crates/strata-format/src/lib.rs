//! Strata's on-disk and wire formats: pure encoders and decoders, no I/O.
