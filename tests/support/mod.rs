//! Test support shared by the integration (`tests/it`) and end-to-end (`tests/e2e`) suites.
#![allow(dead_code)]
