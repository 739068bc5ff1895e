//! Placeholder: zmtp name mapping (filled in next).
