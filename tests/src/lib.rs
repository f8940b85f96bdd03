//! levee-tests
