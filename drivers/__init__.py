"""Small typed libraries for gate hardware. They import nothing from edge/, cloud/ or sync/."""
