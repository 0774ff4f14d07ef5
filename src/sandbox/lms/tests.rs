//! End-to-end tests of the mock LMS over loopback HTTP.
