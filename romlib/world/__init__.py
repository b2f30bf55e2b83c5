"""The embedded 64×64 world: renderer, language, oracle, data (another branch) and its models and trainers."""
