//! Test support shared by the integration (`tests/it`) and end-to-end (`tests/e2e`) suites.
#![allow(dead_code)]

pub mod image;
pub mod proxy;
pub mod push;
pub mod registry;
