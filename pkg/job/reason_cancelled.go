package job

// ReasonCancelled is reserved for a job cancelled before any request was
// sent; a plain re-run sends such a job again, as nothing reached its target.
const ReasonCancelled = "cancelled"
