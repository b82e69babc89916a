"""Camera analytics: footfall counting on a fixed camera (see engine.FootfallEngine)."""
