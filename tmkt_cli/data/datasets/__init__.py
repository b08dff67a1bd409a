"""Dataset sources for ``tmkt prepare``; importing a module registers its sources."""
