//! The mtg-multi application library.
