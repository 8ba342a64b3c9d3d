"""Training stage: the tiny offline model, composable ms-swift argument files (recipes), the launcher and export."""
