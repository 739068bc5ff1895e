//! Placeholder: mqtt name mapping (filled in next).
