//! polymq-nats: the nats frontend.
