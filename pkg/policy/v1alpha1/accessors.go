package v1alpha1

// PolicySpec returns the policy's common spec, so that code can treat both
// kinds alike.
func (p *MeshRolePolicy) PolicySpec() *PolicySpec { return &p.Spec }

// PolicyStatus returns the policy's status.
func (p *MeshRolePolicy) PolicyStatus() *PolicyStatus { return &p.Status }

// PolicySpec returns the policy's common spec, so that code can treat both
// kinds alike.
func (p *ClusterMeshRolePolicy) PolicySpec() *PolicySpec { return &p.Spec.PolicySpec }

// PolicyStatus returns the policy's status.
func (p *ClusterMeshRolePolicy) PolicyStatus() *PolicyStatus { return &p.Status }
