//! Placeholder: nsq name mapping (filled in next).
