"""PySide6 desktop editor: a thin Qt shell over ``engine`` (the engine never imports Qt)."""
