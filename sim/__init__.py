"""SimPy discrete-event replay of request and routing traces through a Plan; see DESIGN.md section 6."""
