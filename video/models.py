"""3D model table (filled in by the video issue)."""
