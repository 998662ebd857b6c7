"""Raw talking-head videos -> ArrayRecord shards of segment records (emo-prepare), and the Grain input pipeline."""
