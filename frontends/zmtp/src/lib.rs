//! polymq-zmtp: the zmtp frontend.
