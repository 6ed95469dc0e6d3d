//! White-box tests and loom models of the internal protocols.
