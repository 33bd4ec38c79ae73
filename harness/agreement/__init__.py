"""Do backends compute the same thing: gradient agreement, ties, finite differences (`fwbench agree`)."""
