//! polymq-nsq: the nsq frontend.
