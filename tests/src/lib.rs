//! Helpers shared by the end-to-end tests in `tests/tests/`: the
//! `DATAPLANE_REQUIRE` contract (a skip is a failure where CI requires the
//! capability) lives here.
