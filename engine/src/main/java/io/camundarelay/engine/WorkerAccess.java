package io.camundarelay.engine;

import static org.camunda.bpm.engine.authorization.Authorization.ANY;
import static org.camunda.bpm.engine.authorization.Authorization.AUTH_TYPE_GRANT;

import org.camunda.bpm.engine.AuthorizationService;
import org.camunda.bpm.engine.IdentityService;
import org.camunda.bpm.engine.ProcessEngine;
import org.camunda.bpm.engine.authorization.Authorization;
import org.camunda.bpm.engine.authorization.Groups;
import org.camunda.bpm.engine.authorization.Permission;
import org.camunda.bpm.engine.authorization.Permissions;
import org.camunda.bpm.engine.authorization.ProcessDefinitionPermissions;
import org.camunda.bpm.engine.authorization.Resources;
import java.util.Arrays;
import java.util.List;
import org.camunda.bpm.engine.identity.Group;
import org.camunda.bpm.engine.identity.Tenant;
import org.camunda.bpm.engine.identity.User;
import org.camunda.bpm.engine.impl.cfg.AbstractProcessEnginePlugin;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.stereotype.Component;

/**
 * The least-privilege identity of camunda-relay workers, made at every start (idempotent).
 *
 * <p>The group {@value #GROUP} holds one grant on every process definition: exactly the
 * permissions the worker, the reconciler and the CLI's {@code correlate} and {@code pending}
 * need, and nothing else:
 *
 * <ul>
 *   <li>{@code READ}: the definition and its BPMN XML (the reply's catch event is looked up);
 *   <li>{@code READ_INSTANCE}: external tasks (fetch and lock needs it), executions, event
 *       subscriptions, incidents, process variables;
 *   <li>{@code UPDATE_INSTANCE}: fetch and lock, complete, failure, BPMN error, extend lock,
 *       unlock, message correlation, creating an incident;
 *   <li>{@code READ_HISTORY}: process, activity and variable history and the external task log.
 * </ul>
 *
 * No deployments, no users, groups, tenants or authorizations, no starting, deleting,
 * suspending or migrating instances. Should the grant have been changed, it is set back to
 * exactly these permissions; other grants an administrator gave the group are left alone.
 *
 * <p>With {@code CAMUNDA_WORKER_USER} and {@code CAMUNDA_WORKER_PASSWORD} set, that user is
 * created (or its password set to the configured one), unlocked, made a member of the group,
 * and may read its own profile only.
 *
 * <p>With {@code CAMUNDA_WORKER_TENANTS} (comma-separated tenant ids) the group is a member of
 * exactly those tenants (each created when missing), so its members (the worker user, and
 * users authenticated by a JWT that are in the group) see those tenants' tasks, and no other
 * tenant's: memberships of the group in tenants no longer in the setting are removed. Unset (or
 * blank), the group's tenant memberships are left as they are (an administrator's, made by
 * hand, included). Members' own tenant memberships are left alone either way.
 */
@Component
public class WorkerAccess extends AbstractProcessEnginePlugin {

  /** Camunda's default id pattern allows letters and digits only. */
  public static final String GROUP = "relayworkers";

  static final Permission[] WORKER_PERMISSIONS = {
    ProcessDefinitionPermissions.READ,
    ProcessDefinitionPermissions.READ_INSTANCE,
    ProcessDefinitionPermissions.UPDATE_INSTANCE,
    ProcessDefinitionPermissions.READ_HISTORY,
  };

  private static final Logger LOG = LoggerFactory.getLogger(WorkerAccess.class);

  private final String workerUser;
  private final String workerPassword;
  private final List<String> tenants;

  public WorkerAccess(
      @Value("${relay.worker.user:}") String workerUser,
      @Value("${relay.worker.password:}") String workerPassword,
      @Value("${relay.worker.tenants:}") String tenants) {
    this.workerUser = workerUser.trim();
    this.workerPassword = workerPassword;
    this.tenants = tenantIds(tenants);
  }

  /** The ids of a comma-separated list, blanks left out. */
  static List<String> tenantIds(String setting) {
    return Arrays.stream(setting.split(","))
        .map(String::trim)
        .filter(id -> !id.isEmpty())
        .distinct()
        .toList();
  }

  @Override
  public void postProcessEngineBuild(ProcessEngine engine) {
    IdentityService identity = engine.getIdentityService();
    AuthorizationService authorizations = engine.getAuthorizationService();
    if (identity.createGroupQuery().groupId(GROUP).count() == 0) {
      Group group = identity.newGroup(GROUP);
      group.setName("camunda-relay workers");
      group.setType(Groups.GROUP_TYPE_SYSTEM);
      identity.saveGroup(group);
    }
    Authorization grant =
        authorizations
            .createAuthorizationQuery()
            .groupIdIn(GROUP)
            .resourceType(Resources.PROCESS_DEFINITION)
            .resourceId(ANY)
            .singleResult();
    if (grant == null) {
      grant = authorizations.createNewAuthorization(AUTH_TYPE_GRANT);
      grant.setGroupId(GROUP);
      grant.setResource(Resources.PROCESS_DEFINITION);
      grant.setResourceId(ANY);
    }
    grant.setPermissions(WORKER_PERMISSIONS);
    authorizations.saveAuthorization(grant);
    ensureTenants(identity);
    if (workerUser.isEmpty()) {
      LOG.info("worker group '{}' ready (no CAMUNDA_WORKER_USER set)", GROUP);
      return;
    }
    ensureWorkerUser(identity, authorizations);
    LOG.info("worker user '{}' ready, member of '{}'", workerUser, GROUP);
  }

  private void ensureWorkerUser(IdentityService identity, AuthorizationService authorizations) {
    User user = identity.createUserQuery().userId(workerUser).singleResult();
    if (user == null) {
      user = identity.newUser(workerUser);
      user.setFirstName("camunda-relay");
      user.setLastName("worker");
    }
    // The setting is the password: set at every start (a changed setting rotates it).
    user.setPassword(workerPassword);
    identity.saveUser(user);
    identity.unlockUser(workerUser);
    if (identity.createUserQuery().userId(workerUser).memberOfGroup(GROUP).count() == 0) {
      identity.createMembership(workerUser, GROUP);
    }
    // A new user gets ALL on its own profile (Camunda's default): reading it is enough.
    Authorization own =
        authorizations
            .createAuthorizationQuery()
            .userIdIn(workerUser)
            .resourceType(Resources.USER)
            .resourceId(workerUser)
            .singleResult();
    if (own != null) {
      own.setPermissions(new Permission[] {Permissions.READ});
      authorizations.saveAuthorization(own);
    }
  }

  private void ensureTenants(IdentityService identity) {
    if (tenants.isEmpty()) {
      return; // unset: the memberships an administrator made stay as they are
    }
    for (Tenant member : identity.createTenantQuery().groupMember(GROUP).list()) {
      if (!tenants.contains(member.getId())) {
        identity.deleteTenantGroupMembership(member.getId(), GROUP);
        LOG.info("worker group '{}' no longer a member of tenant '{}'", GROUP, member.getId());
      }
    }
    for (String tenant : tenants) {
      if (identity.createTenantQuery().tenantId(tenant).count() == 0) {
        Tenant created = identity.newTenant(tenant);
        created.setName(tenant);
        identity.saveTenant(created);
      }
      if (identity.createTenantQuery().tenantId(tenant).groupMember(GROUP).count() == 0) {
        identity.createTenantGroupMembership(tenant, GROUP);
      }
    }
    LOG.info("worker group '{}' member of tenants {}", GROUP, tenants);
  }
}
