package io.camundarelay.engine;

import jakarta.servlet.FilterConfig;
import jakarta.servlet.ServletException;
import org.camunda.bpm.engine.rest.security.auth.AuthenticationProvider;
import org.camunda.bpm.engine.rest.security.auth.ProcessEngineAuthenticationFilter;
import org.camunda.bpm.engine.rest.security.auth.impl.HttpBasicAuthenticationProvider;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * HTTP Basic authentication on the engine REST API, as Camunda Run does it, and JWT bearer
 * tokens beside it when {@code relay.jwt.issuer-uri} ({@code CAMUNDA_JWT_ISSUER_URI}) is set
 * ({@link JwtAuthentication}).
 *
 * <p>The REST API is open by default in Camunda 7; this registers the engine's own
 * authentication filter on {@code /engine-rest/*}. {@code GET /engine-rest/engine} (the list
 * of engines) carries no engine name and stays open, which makes it the readiness probe.
 * Async support is on because fetch-and-lock long polling needs it. Turn it off only for a
 * trusted network with {@code relay.rest.basic-auth=false} ({@link StartupCheck} warns: requests
 * without a user pass every authorization check).
 */
@Configuration
@ConditionalOnProperty(name = "relay.rest.basic-auth", havingValue = "true", matchIfMissing = true)
public class RestAuthentication {

  @Bean
  public FilterRegistrationBean<ProcessEngineAuthenticationFilter> restAuthenticationFilter(
      @Value("${relay.jwt.issuer-uri:}") String issuer,
      @Value("${relay.jwt.audience:}") String audience,
      @Value("${relay.jwt.allowed-clients:}") String allowedClients,
      @Value("${relay.jwt.user-claim:preferred_username}") String userClaim) {
    ProcessEngineAuthenticationFilter filter =
        issuer.isBlank()
            ? new ProcessEngineAuthenticationFilter()
            : new WithProvider(
                jwtAuthentication(issuer.trim(), audience.trim(), allowedClients, userClaim));
    FilterRegistrationBean<ProcessEngineAuthenticationFilter> registration =
        new FilterRegistrationBean<>(filter);
    registration.setName("camunda-rest-auth");
    registration.addUrlPatterns("/engine-rest/*");
    registration.addInitParameter(
        ProcessEngineAuthenticationFilter.AUTHENTICATION_PROVIDER_PARAM,
        HttpBasicAuthenticationProvider.class.getName());
    registration.addInitParameter("rest-url-pattern-prefix", "/engine-rest");
    registration.setAsyncSupported(true);
    return registration;
  }

  /** Bearer tokens beside Basic; the issuer's keys are asked for from now on, in the background. */
  private static JwtAuthentication jwtAuthentication(
      String issuer, String audience, String allowedClients, String userClaim) {
    IssuerKeys keys = new IssuerKeys(issuer).start();
    return new JwtAuthentication(
        JwtChecks.decoder(keys, audience, JwtChecks.clientIds(allowedClients)),
        keys,
        userClaim.trim(),
        new HttpBasicAuthenticationProvider());
  }

  /** The engine's filter with a provider instance instead of one made from a class name. */
  private static final class WithProvider extends ProcessEngineAuthenticationFilter {

    private final AuthenticationProvider provider;

    WithProvider(AuthenticationProvider provider) {
      this.provider = provider;
    }

    @Override
    public void init(FilterConfig config) throws ServletException {
      super.init(config);
      authenticationProvider = provider;
    }
  }
}
