"""Test helpers: real local servers and tiny real models built by the tests themselves."""
