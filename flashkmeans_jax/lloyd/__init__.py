"""Lloyd iteration as a statistics core (:mod:`.stats`), seeding and the
compiled loop; written once for every driver against :mod:`.combine`."""
